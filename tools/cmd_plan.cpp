// Placeholder until its issue lands: the subcommand is registered so helpers can fill it in.
#include "commands.h"
#include "keel/error.h"
namespace keel::cli {
int cmd_plan(const CommandArgs&) { throw Error("keel plan is not available in this build yet"); }
}  // namespace keel::cli
