// Placeholder until its issue lands: the subcommand is registered so helpers can fill it in.
#include "commands.h"
#include "keel/error.h"
namespace keel::cli {
int cmd_bench(const CommandArgs&) { throw Error("keel bench is not available in this build yet"); }
}  // namespace keel::cli
