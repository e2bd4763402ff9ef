//! One error type for the stream's stages: which system failed, whose fault it is, and what the
//! loop should do about it. Each source, sink and database error is mapped to it once, where
//! the error is made (the stage knows whether its client survives the failure); the stream's
//! recovery matches on [`Retry`], never on the message.

use std::fmt;

/// The outside system (or the part of meshguard) an error came from; the `sink` label of
/// `meshguard_sink_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// The Kafka cluster: the consumer or the side-topic producer.
    Kafka,
    /// The document store.
    MongoDb,
    /// The source database reconciliation reads.
    MySql,
}

impl System {
    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::MongoDb => "mongodb",
            Self::MySql => "mysql",
        }
    }
}

/// Whose fault an error is (Arroyo's split): a user's data or configuration, an outside system
/// that may recover, or meshguard itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Configuration or data the operator must change; retrying the same thing fails the same way.
    User,
    /// A server that is down, slow or restarting.
    External,
    /// A bug in meshguard.
    Internal,
}

/// What the stream does with a failed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Read the batch again after a pause that doubles up to a bound: the system may come back
    /// and every sink is idempotent (or transactional).
    Backoff,
    /// Replace the client first (a fenced transactional producer, or one whose deliveries
    /// failed: a fresh client starts from new metadata and connections), then as `Backoff`.
    ReplaceClient,
    /// Retrying cannot help: stop with the error, so a supervisor shows it instead of a loop
    /// that never advances.
    Stop,
}

/// A failed stage, with its retry hint.
#[derive(Debug, Clone)]
pub struct Error {
    /// Where it failed.
    pub system: System,
    /// Whose fault it is.
    pub domain: Domain,
    /// What to do about it.
    pub retry: Retry,
    /// The cause, for the log; never holds a secret (redacted where it is made).
    pub message: String,
}

impl Error {
    /// An outside system that may come back: retry with backoff.
    pub fn transient(system: System, message: impl fmt::Display) -> Self {
        Self { system, domain: Domain::External, retry: Retry::Backoff, message: message.to_string() }
    }

    /// A client that cannot be used again: replace it, then retry.
    pub fn replace_client(system: System, message: impl fmt::Display) -> Self {
        Self { system, domain: Domain::External, retry: Retry::ReplaceClient, message: message.to_string() }
    }

    /// A refusal that retrying cannot fix (bad data or configuration): stop.
    pub fn refused(system: System, message: impl fmt::Display) -> Self {
        Self { system, domain: Domain::User, retry: Retry::Stop, message: message.to_string() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.system.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

/// Hides the password of every `scheme://user:password@host` in `text` (`user:***@`): the one
/// redaction every connection string in a message or a log line goes through.
pub fn redact_uri(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (head, tail) = rest.split_at(start + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`')).unwrap_or(tail.len());
        let (word, after) = tail.split_at(end);
        match word.rfind('@') {
            Some(at) => {
                let userinfo = &word[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&word[at..]);
            }
            None => out.push_str(word),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The passwords of the connection strings a client was given, to scrub from messages where a
/// library echoes one outside a URI (decoded, or in a parse error).
#[derive(Debug, Default, Clone)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The password of `uri`'s userinfo, if it has one.
    pub fn of(uri: &str) -> Self {
        let authority = uri.split_once("://").map_or("", |(_, tail)| tail.split(char::is_whitespace).next().unwrap_or_default());
        let password = authority.rsplit_once('@').and_then(|(userinfo, _)| userinfo.split_once(':')).map(|(_, p)| p);
        Self(password.filter(|p| !p.is_empty()).map(str::to_owned).into_iter().collect())
    }

    /// Also scrubs `password` (e.g. one given apart from the URI).
    pub fn with_password(mut self, password: Option<String>) -> Self {
        self.0.extend(password.filter(|p| !p.is_empty()));
        self
    }

    /// `message` with every URI's password and every known password replaced by `***`.
    pub fn scrub(&self, message: &str) -> String {
        self.0.iter().fold(redact_uri(message), |m, s| m.replace(s.as_str(), "***"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_every_uri() {
        assert_eq!(redact_uri("mongodb://u:secret@h:1/db"), "mongodb://u:***@h:1/db");
        assert_eq!(redact_uri("mysql://root@h/banking"), "mysql://root@h/banking");
        assert_eq!(redact_uri("a mysql://u:p@x and mongodb://v:q@y"), "a mysql://u:***@x and mongodb://v:***@y");
        assert_eq!(redact_uri("no uri here"), "no uri here");
    }

    #[test]
    fn secrets_scrub_passwords_outside_uris() {
        let secrets = Secrets::of("mysql://root:hunter2@db/banking").with_password(Some("other".into()));
        assert_eq!(secrets.scrub("bad password hunter2 or other"), "bad password *** or ***");
        assert_eq!(Secrets::of("mysql://root@db/banking").scrub("nothing"), "nothing");
    }

    #[test]
    fn hints_follow_the_constructor() {
        assert_eq!(Error::transient(System::MongoDb, "down").retry, Retry::Backoff);
        assert_eq!(Error::replace_client(System::Kafka, "fenced").retry, Retry::ReplaceClient);
        let refused = Error::refused(System::MongoDb, "bad document");
        assert_eq!((refused.retry, refused.domain), (Retry::Stop, Domain::User));
        assert_eq!(refused.to_string(), "mongodb: bad document");
    }
}
