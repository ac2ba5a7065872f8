//! Who acts: the AWS identity where the action has one (STS GetCallerIdentity, asked by the
//! caller through the AWS adapter), and always the host and the local user.

/// The actor an audit line names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Who {
    /// The AWS identity's ARN, else `user@host`.
    pub who: String,
    pub host: String,
    pub user: String,
}

impl Who {
    /// The local host and user, and `arn` when the action has an AWS identity.
    pub fn local(arn: Option<String>) -> Self {
        let host = hostname();
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            // SAFETY: getuid has no preconditions and cannot fail.
            .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }));
        Who {
            who: arn.unwrap_or_else(|| format!("{user}@{host}")),
            host,
            user,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}
