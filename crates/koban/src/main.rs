//! The `koban` binary: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    let parsed = koban::config::parse(std::env::args_os().collect());
    match parsed.and_then(|(cli, file)| koban::cli::run(cli, file)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("koban: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
