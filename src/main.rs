use clap::Parser;
use ephemera::settings::{Overrides, Settings};
use ephemera::wiping_allocator::WipingAllocator;

/// Every freed block is zeroed: nothing of a chat survives in freed memory.
#[global_allocator]
static ALLOCATOR: WipingAllocator = WipingAllocator;

fn main() -> anyhow::Result<()> {
    let overrides = Overrides::parse();
    if overrides.print_example_config {
        print!("{}", Settings::example_toml());
        return Ok(());
    }
    let settings = Settings::load(&overrides)?;
    ephemera::telemetry::init_logging(&settings.log_level)?;
    if !settings.allow_core_dumps {
        ephemera::hardening::disable_core_dumps()?;
    }
    actix_web::rt::System::new().block_on(ephemera::startup::run(settings))
}
