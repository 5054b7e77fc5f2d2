//! stockhook-worker: drains the queue, normalizes payloads into facts, keeps inventory state,
//! evaluates alert rules and sends email. The binary (`main.rs`) is a thin CLI over these modules.

pub mod adapters;
pub mod facts;
