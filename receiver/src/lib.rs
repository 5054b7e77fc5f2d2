//! stockhook-receiver: verifies each webhook's signature over the raw bytes, appends it durably to
//! the queue, and answers. The binary (`main.rs`) is a thin CLI over these modules.

pub mod schemes;
