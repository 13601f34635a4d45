// `pgshelf explain`: what pgshelf would do with one statement under a rules file.
#pragma once

namespace pgshelf::app {

// `args` are the arguments after "explain". Returns the exit status.
int explain_command(int argc, char** argv);

}  // namespace pgshelf::app
