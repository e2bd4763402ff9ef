//! A `meshguard run` process under test.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Names, binary, free_port, http_get, mongodb, mysql, repo};

/// A running `meshguard run`.
pub struct Service {
    pub child: Child,
    pub http: String,
}

impl Service {
    pub fn start(bootstrap: &str, products: &Path, names: &Names, extra_env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let http = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(binary());
        let _ = cmd
            .arg("run")
            .current_dir(repo())
            .env("MESHGUARD__KAFKA__BOOTSTRAP_SERVERS", bootstrap)
            .env("MESHGUARD__KAFKA__GROUP_ID", &names.group)
            .env("MESHGUARD__PRODUCTS__DIR", products)
            .env("MESHGUARD__SCHEMAS__DIR", repo().join("schemas"))
            .env("MESHGUARD__TOPICS__DLQ", &names.dlq)
            .env("MESHGUARD__TOPICS__ALERTS", &names.alerts)
            .env("MESHGUARD__TOPICS__LINEAGE", &names.lineage)
            // Group-wide quality's topics of this test only (a test may name its own): the
            // compacted state and claims topics are read to their end at every assignment, and
            // the defaults would grow with every test run on a broker that is kept.
            .env("MESHGUARD__TOPICS__PARTIALS", format!("{}.partials", names.alerts))
            .env("MESHGUARD__TOPICS__QUALITY_STATE", format!("{}.quality-state", names.alerts))
            .env("MESHGUARD__TOPICS__CLAIMS", format!("{}.claims", names.alerts))
            .env("MESHGUARD__HTTP__ADDR", &http)
            .env("MESHGUARD__MONGODB__URI", mongodb())
            .env("MESHGUARD__MONGODB__DATABASE", &names.database)
            // Tests count one lineage entry per input record; the generator's invalid records
            // with a malformed id all carry `PAY-000123`, more versions of that one key than the
            // default history (10) keeps.
            .env("MESHGUARD__MONGODB__HISTORY", "100000")
            .env("MESHGUARD__MYSQL__URL", mysql())
            .env("RUST_LOG", std::env::var("MESHGUARD_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            let _ = cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn meshguard: {e}"));
        Self { child, http }
    }

    /// Sends a signal by number (9 = KILL, 15 = TERM).
    pub fn signal(&self, sig: i32) {
        let status =
            Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its code.
    pub fn wait(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "meshguard did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GETs a path of the operational endpoint.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.http, path)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if matches!(self.get("/readyz"), Some((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("meshguard at {} was not ready within {within:?}", self.http);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
