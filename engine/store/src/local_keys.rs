//! The appliance-local keys (`Store::local_get`/`local_set`: never replicated, never in a
//! settings backup unless named there), in one place so that no two modules name one key
//! twice or two keys alike.

/// The replica's own state (role, epoch, peer, last sync), as JSON.
pub const REPLICA_STATE_KEY: &str = "replica/state";
/// When the last settings backup was taken (decimal milliseconds since the Unix epoch, or a
/// JSON number): written by `dyad backup create`, read by the install's backup check and by
/// factory reset.
pub const LAST_BACKUP_TAKEN_KEY: &str = "backup/last_taken_unix_ms";
/// Where the previous release noted when it first saw a configuration version (JSON); read
/// only, for stores it wrote (the store now records changes itself, `config_changed_unix_ms`).
pub const LEGACY_CONFIG_CHANGED_KEY: &str = "update/config_changed";
