// What a statement does to the session settings that change query results
// (role, search_path, DateStyle, ...), found from its parse tree.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgshelf::cache_rules {

struct SettingChange {
    enum class Kind { set, reset, reset_all };
    Kind kind = Kind::set;
    std::string name;   // lower-case GUC name ("role", "search_path", "timezone", ...)
    std::string value;  // for `set`: the value list joined with ", "
    bool local = false;  // SET LOCAL: lasts until the end of the transaction
    bool operator==(const SettingChange&) const = default;
};

struct SettingsEffect {
    std::vector<SettingChange> changes;
    // The statement may change settings in ways a parse tree cannot show:
    // set_config(), DO blocks, CALL, ROLLBACK TO SAVEPOINT.
    bool opaque = false;
    bool operator==(const SettingsEffect&) const = default;
};

// Cheap textual pre-check: false means the statement certainly changes no
// setting, so the (much dearer) parse can be skipped.
bool may_change_settings(std::string_view sql);

// Full analysis of one SQL text (may hold several statements). A text that
// does not parse changes nothing: the server will reject it too.
SettingsEffect analyze_settings(std::string_view sql);

}  // namespace pgshelf::cache_rules
