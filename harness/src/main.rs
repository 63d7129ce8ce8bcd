fn main() -> std::process::ExitCode {
    zdt::cli::main()
}
