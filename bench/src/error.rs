//! Errors of the peer benchmark.

/// Why a benchmark run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A system could not be started (missing binary, bad flags, no quorum).
    #[error("starting {system}: {reason}")]
    Start { system: String, reason: String },
    /// A server process of the system under test died during the run.
    #[error(
        "{system}: server process {process} exited ({status}); last lines of its log:\n{log_tail}"
    )]
    Exited {
        system: String,
        process: String,
        status: String,
        log_tail: String,
    },
    /// The driver could not connect to the system.
    #[error("connecting to {system} at {addr}: {reason}")]
    Connect {
        system: String,
        addr: String,
        reason: String,
    },
    /// Some keys could not be written before measuring.
    #[error("prefill failed: {failed} of {keys} keys not written (last error: {last})")]
    Prefill {
        failed: u64,
        keys: u64,
        last: String,
    },
    /// A client task panicked or was cancelled.
    #[error("client task failed: {0}")]
    Task(String),
    #[error("invalid arguments: {0}")]
    Args(String),
    #[error("drawing the plot: {0}")]
    Plot(String),
    #[error("interrupted")]
    Interrupted,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl BenchError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

/// Why one request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    #[error("timed out")]
    Timeout,
    /// The system answered with an error, or the connection failed.
    #[error("{0}")]
    Failed(String),
}
