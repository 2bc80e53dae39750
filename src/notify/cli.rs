//! `ephemera notify ...`: the operator's commands on the e-mail list. They read the same
//! settings as the server (file, `EPHEMERA_*`, flags) and work while it runs (SQLite's WAL lets
//! them read beside its writes; a rotation takes the write lock, and the server picks up the
//! new key version in its next commit). `export` is the only code that ever decrypts.

use std::io::Write as _;
use std::path::Path;

use super::store::{Access, Store};
use crate::settings::{Command, NotifyCommand, Settings};

pub fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    let Command::Notify(command) = command;
    if settings.notify_db_path.is_empty() {
        anyhow::bail!("notify_db_path is not set: this server keeps no e-mail list");
    }
    let db_path = Path::new(&settings.notify_db_path);
    let key_path = Path::new(&settings.notify_master_key_path);
    let mut out = std::io::stdout().lock();
    match command {
        NotifyCommand::Export { topic } => {
            let store = Store::open_existing(db_path, key_path, Access::Read)?;
            if !settings.notify_topics.contains(&topic) && !store.holds_topic(&topic)? {
                anyhow::bail!(
                    "no topic {topic:?}: notify_topics are {}, and the file holds no other",
                    settings.notify_topics.join(", ")
                );
            }
            let export = store.export(&topic)?;
            for address in &export.addresses {
                writeln!(out, "{}", address.as_str())?;
            }
            out.flush()?;
            let mut problems = Vec::new();
            if export.tampered > 0 {
                problems.push(format!(
                    "{} row(s) of topic {topic} fail authentication: the database file was altered",
                    export.tampered
                ));
            }
            for version in &export.missing_versions {
                problems.push(format!(
                    "rows of topic {topic} use key version {version}, which the master key file does not hold"
                ));
            }
            if !problems.is_empty() {
                anyhow::bail!(
                    "{} address(es) printed, but {}",
                    export.addresses.len(),
                    problems.join("; ")
                );
            }
        }
        NotifyCommand::Count => {
            let store = Store::open_existing(db_path, key_path, Access::Read)?;
            for (topic, count) in store.count(&settings.notify_topics)? {
                writeln!(out, "{topic} {count}")?;
            }
        }
        NotifyCommand::RotateKey => {
            let mut store = Store::open_existing(db_path, key_path, Access::Write)?;
            let (version, rows) = store.rotate_key()?;
            writeln!(
                out,
                "key version {version}: {rows} row(s) (an address under one topic each) re-encrypted; older keys removed from {}",
                key_path.display()
            )?;
        }
    }
    Ok(())
}
