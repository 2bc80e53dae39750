//! What a session takes with it when it moves to another node of a cluster (see
//! `session::moving`): plain data, sealed when it crosses the relay. Kept apart from the
//! actors so that the registry can name it without importing them.

use serde::{Deserialize, Serialize};

/// What a session takes with it to another node; crosses the relay sealed.
#[derive(Debug, Serialize, Deserialize)]
pub struct MovedSession {
    pub state: MovedState,
    /// The last `find`, so that `next` queues again with the same preferences.
    pub find: Option<MovedFind>,
    /// The last chat's end, while its resume grace lasts: chat id, seq, rendered frame.
    pub last_ended: Option<(String, u64, String)>,
    /// The difficulty of a proof of work still owed (a new challenge is set on arrival).
    pub pow_difficulty: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "s", rename_all = "snake_case")]
pub enum MovedState {
    Idle,
    Waiting {
        mode: String,
    },
    Chatting {
        chat: String,
        /// The node running the chat's pair (filled in by the relay when it is the sender).
        pair_node: Option<String>,
        side: u8,
        mode: String,
        /// `Some(requeue)` when the member had asked to end the chat (`leave` or `next`).
        ending: Option<bool>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MovedFind {
    pub adult: bool,
    pub mode: String,
    pub interests: Vec<String>,
    pub nick: Option<String>,
}
