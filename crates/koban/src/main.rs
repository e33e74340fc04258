//! The `koban` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = koban::cli::Cli::parse();
    match koban::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("koban: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
