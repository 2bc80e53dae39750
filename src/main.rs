use clap::Parser;
use ephemera::settings::{Overrides, Settings};
use ephemera::wiping_allocator::WipingAllocator;

/// Every freed block is zeroed: nothing of a chat survives in freed memory.
#[global_allocator]
static ALLOCATOR: WipingAllocator = WipingAllocator;

fn main() -> anyhow::Result<()> {
    let mut overrides = Overrides::parse();
    if overrides.print_example_config {
        print!("{}", Settings::example_toml());
        return Ok(());
    }
    let settings = Settings::load(&overrides)?;
    if let Some(command) = overrides.command.take() {
        // The export decrypts addresses: no core file of it either.
        if !settings.allow_core_dumps {
            ephemera::hardening::disable_core_dumps()?;
        }
        return ephemera::notify::cli::run(command, &settings);
    }
    ephemera::telemetry::init_logging(&settings.log_level)?;
    if !settings.allow_core_dumps {
        ephemera::hardening::disable_core_dumps()?;
    }
    actix_web::rt::System::new().block_on(ephemera::startup::run(settings))
}
