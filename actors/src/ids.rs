//! The ids that name sessions and chats. Session ids are numbers that never leave the process;
//! a chat's id is random and goes to its members (`chat` in `matched`), who name it when they
//! resume. Resume tokens, the one secret, live in `registry`.

use base64::Engine as _;

/// One session, from its first connection until it ends; unique within the process.
pub type SessionId = u64;

/// One chat: 12 random bytes as 16 base64url characters. Random rather than counted, so it
/// tells a member nothing about how many chats the server had, and a guessed one names nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChatId([u8; CHAT_ID_CHARS]);

/// Characters of a chat id on the wire.
pub const CHAT_ID_CHARS: usize = 16;

impl ChatId {
    /// A fresh random chat id.
    pub fn generate() -> Self {
        let mut raw = [0u8; 12];
        // The OS random source failing leaves no safe way to mint ids at all.
        getrandom::getrandom(&mut raw).expect("the operating system's random source works");
        let mut id = [0u8; CHAT_ID_CHARS];
        let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(raw, &mut id)
            .expect("12 bytes are 16 base64 characters");
        debug_assert_eq!(written, CHAT_ID_CHARS);
        Self(id)
    }

    /// A chat id a client named, if it is shaped like one (16 base64url characters).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let shaped = bytes.len() == CHAT_ID_CHARS
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        shaped.then(|| Self(bytes.try_into().expect("length checked")))
    }

    pub fn as_str(&self) -> &str {
        // Built from base64url characters only, here or in `parse`.
        std::str::from_utf8(&self.0).expect("a chat id is ASCII")
    }
}

impl std::fmt::Debug for ChatId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChatId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_16_base64url_characters_that_parse_back_and_differ() {
        let one = ChatId::generate();
        let two = ChatId::generate();
        assert_eq!(one.as_str().len(), CHAT_ID_CHARS);
        assert_eq!(ChatId::parse(one.as_str()), Some(one));
        assert_ne!(one, two);
    }

    #[test]
    fn only_16_base64url_characters_parse() {
        assert!(ChatId::parse("abcdefghijklmn-_").is_some());
        for bad in [
            "",
            "short",
            "abcdefghijklmnop1",
            "abcdefghijklmn+/",
            "abcdefghijklmnö",
        ] {
            assert_eq!(ChatId::parse(bad), None, "{bad:?}");
        }
    }
}
