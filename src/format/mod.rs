//! The bundle format, naming no AWS SDK: the manifest and the object headers it carries
//! ([`headers`]), ZIP64 volumes written ([`archive`]) and
//! read ([`unzip`]), objects split across volumes ([`parts`]), a multipart source's part sizes ([`layout`]), age sealing ([`seal`]),
//! signatures ([`sign`]),
//! where volumes are written ([`sink`]) and durable local files ([`durable`]).

pub mod archive;
pub mod durable;
pub mod headers;
pub mod layout;
pub mod manifest;
pub mod parts;
pub mod seal;
pub mod sign;
pub mod sink;
pub mod unzip;
