//! One clear message instead of a panic backtrace when a build prerequisite is missing.

/// Prints `message` (and how to fix it) and stops the build script.
pub fn fail(message: &str) -> ! {
    eprintln!("\nerror: mlx-sys cannot be built: {message}\n");
    std::process::exit(1)
}
