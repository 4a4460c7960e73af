//! `translation-worker` binary: the command line is in `cli`, the work in the library.

mod cli;

fn main() -> anyhow::Result<()> {
    cli::run()
}
