//! The `orderflow` binary: parses the subcommand and hands over to the lib.

fn main() {
    std::process::exit(orderflow::cli::main());
}
