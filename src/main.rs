fn main() -> std::process::ExitCode {
    snapfs::cli::main()
}
