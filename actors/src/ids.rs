//! The numbers that name sessions and chats inside one process. Random ids for the wire (resume
//! tokens) live in `registry`; these never leave the server.

/// One session, from its first connection until it ends; unique within the process.
pub type SessionId = u64;

/// One chat (one pair actor); unique within the process.
pub type ChatId = u64;
