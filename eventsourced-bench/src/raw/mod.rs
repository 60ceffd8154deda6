//! Raw write ceilings: the same writes as the runtime's, straight to each
//! server, so that the runtime's numbers have something to be judged by.

pub(crate) mod nats;
pub(crate) mod postgres;
pub(crate) mod sqlite;
