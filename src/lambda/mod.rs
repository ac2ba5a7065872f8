//! The Lambda functions' handlers: configuration from the environment, events in and out, self
//! re-invocation; the work is the library's ([`export`] and [`import`]).

pub mod export;
pub mod import;
