//! Processes started by the tests, ended by PID on drop.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The proxy binary under test: `$PROXY_BIN`, else `target/debug/proxy` (built by `cargo xtask test`).
///
/// # Panics
///
/// If the binary is not there.
pub fn proxy_bin() -> PathBuf {
    let path = std::env::var_os("PROXY_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/proxy"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "proxy binary not found at {}: run the tests with `cargo xtask test` (it builds it)",
        path.display()
    );
    path
}

/// A child process that is killed (SIGKILL, by its PID) and reaped on drop.
pub struct ChildGuard {
    child: Option<Child>,
    pub name: String,
    log: PathBuf,
}

impl ChildGuard {
    /// Starts `cmd` with stdout and stderr going to `log`.
    ///
    /// # Panics
    ///
    /// If the log file cannot be created or `cmd` cannot be started.
    #[must_use]
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("dup log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self {
            child: Some(child),
            name: name.to_owned(),
            log,
        }
    }

    /// The process's PID.
    ///
    /// # Panics
    ///
    /// If the process has already been reaped.
    #[must_use]
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().expect("running").id()).expect("pid fits")
    }

    /// The process's output so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill with a PID of a child we started and have not reaped yet.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGKILL and reap: the crash case.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGINT, then wait up to `timeout` for a clean exit; returns the exit code.
    ///
    /// # Panics
    ///
    /// If the process has already been reaped, or waiting for it fails.
    pub fn interrupt(&mut self, timeout: Duration) -> Option<i32> {
        self.signal(libc::SIGINT);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .expect("running")
                .try_wait()
                .expect("wait")
            {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process has exited (and reaps it if so).
    ///
    /// # Panics
    ///
    /// If waiting for the process fails.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(c) => c.try_wait().expect("wait").is_some(),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Result of a finished command.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the proxy CLI with `args` and waits for it.
#[must_use]
pub fn proxy_cli(args: &[&str]) -> Output {
    run(Command::new(proxy_bin()).args(args))
}

/// Runs a prepared command and collects its output.
///
/// # Panics
///
/// If the command cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("run command");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
