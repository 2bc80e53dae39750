//! What counts as an e-mail address here, and its one stored form. The rules are a sanity check,
//! not all of RFC 5321: enough that a typo is caught, that one mailbox has one form (so the
//! blind index finds it again), and that the usual traps for the tools an operator pipes the
//! export into are refused; never so strict that a real address is refused.
//!
//! - The domain is brought to its one ASCII form (UTS-46, as browsers do: case, full-width and
//!   other Unicode variants fold together; `münchen.de` is stored as `xn--mnchen-3ya.de`).
//! - The local part is kept as given (some mail servers tell `Ann` from `ann`), but only as a
//!   plain dot-atom: letters and digits of any script, and `!#$%&'*+/=?^_`{|}~-` and inner dots.
//!   No quotes, comments, spaces, control or invisible formatting characters (zero-width,
//!   direction marks), and no leading `-`, `=` or `+` (a mail command could take the first for
//!   an option, a spreadsheet the others for a formula). Other signs RFC 5322 allows (`` ` ``,
//!   `$`, `|`) stay allowed: quote the export's lines wherever a shell sees them.

/// An address as stored: trimmed, the domain in its ASCII form, the local part as given.
#[derive(Clone, PartialEq, Eq)]
pub struct Address(String);

// Deliberately not Debug-printable as itself: an address must never reach a log line.
impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Address(..)")
    }
}

/// Longest address (RFC 5321's path limit, less the angle brackets).
pub const MAX_ADDRESS_CHARS: usize = 254;
const MAX_LOCAL_CHARS: usize = 64;
const MAX_LABEL_CHARS: usize = 63;

/// Why an address was refused; each is said to the person in the 400 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the address is empty")]
    Empty,
    #[error("the address is longer than 254 characters")]
    TooLong,
    #[error("an address has exactly one @")]
    NotOneAt,
    #[error("the part before the @ must be 1 to 64 letters, digits and the usual signs (such as . + - _), not starting with - or a dot")]
    BadLocalPart,
    #[error("the part after the @ must be a domain name with a dot, like example.org")]
    BadDomain,
}

impl Address {
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(AddressError::Empty);
        }
        if trimmed.chars().count() > MAX_ADDRESS_CHARS {
            return Err(AddressError::TooLong);
        }
        let mut parts = trimmed.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AddressError::NotOneAt);
        };
        if !is_dot_atom(local) {
            return Err(AddressError::BadLocalPart);
        }
        let domain = idna::domain_to_ascii_strict(domain).map_err(|_| AddressError::BadDomain)?;
        let mut labels = 0;
        for label in domain.split('.') {
            labels += 1;
            let label_ok = !label.is_empty()
                && label.len() <= MAX_LABEL_CHARS
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !label_ok {
                return Err(AddressError::BadDomain);
            }
        }
        // A top-level domain is never all digits (that would be an IP address).
        let numeric_tld = domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
        if labels < 2 || numeric_tld || domain.len() > 253 {
            return Err(AddressError::BadDomain);
        }
        let address = format!("{local}@{domain}");
        if address.chars().count() > MAX_ADDRESS_CHARS {
            return Err(AddressError::TooLong);
        }
        Ok(Address(address))
    }

    /// The form deletions match on: all in lower case (people do not remember how they
    /// capitalised their address when they signed up).
    pub fn folded(&self) -> String {
        self.0.to_lowercase()
    }

    /// Rebuilds an address decrypted from the store; it was valid when stored.
    pub(crate) fn from_stored(text: String) -> Address {
        Address(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An unquoted local part (RFC 5322 dot-atom, letters of any script allowed), not starting
/// with `-`.
fn is_dot_atom(local: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
    let atom_char = |c: char| c.is_alphanumeric() || (c.is_ascii() && SPECIALS.contains(c));
    // A leading `-` reads as an option to a mail command, a leading `=` or `+` as a formula
    // to a spreadsheet the export is opened in.
    !local.is_empty()
        && local.chars().count() <= MAX_LOCAL_CHARS
        && !local.starts_with(['-', '=', '+'])
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atom_char))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &str) -> Result<String, AddressError> {
        Address::parse(input).map(|address| address.as_str().to_owned())
    }

    #[test]
    fn trims_lowercases_the_domain_and_keeps_the_local_part() {
        assert_eq!(
            parsed("  Ann.Lee+news@Example.ORG \n").unwrap(),
            "Ann.Lee+news@example.org"
        );
        assert_eq!(parsed("bo@MÜNCHEN.de").unwrap(), "bo@xn--mnchen-3ya.de");
        assert_eq!(
            parsed("bo@xn--mnchen-3ya.de").unwrap(),
            "bo@xn--mnchen-3ya.de"
        );
        // Full-width letters fold to the same domain.
        assert_eq!(
            parsed("owner@ｅｘａｍｐｌｅ.net").unwrap(),
            "owner@example.net"
        );
        assert_eq!(
            parsed("o'brien+x@example.ie").unwrap(),
            "o'brien+x@example.ie"
        );
        assert_eq!(parsed("jürgen@example.de").unwrap(), "jürgen@example.de");
        assert_eq!(parsed("x@a-b.co.uk").unwrap(), "x@a-b.co.uk");
    }

    #[test]
    fn refuses_what_cannot_be_an_address() {
        assert_eq!(parsed("   "), Err(AddressError::Empty));
        assert_eq!(parsed("ann"), Err(AddressError::NotOneAt));
        assert_eq!(parsed("a@b@c.org"), Err(AddressError::NotOneAt));
        assert_eq!(parsed("@example.org"), Err(AddressError::BadLocalPart));
        assert_eq!(parsed("an n@example.org"), Err(AddressError::BadLocalPart));
        assert_eq!(parsed("ann@localhost"), Err(AddressError::BadDomain));
        assert_eq!(parsed("ann@example..org"), Err(AddressError::BadDomain));
        assert_eq!(parsed("ann@-example.org"), Err(AddressError::BadDomain));
        assert_eq!(parsed("ann@example.org."), Err(AddressError::BadDomain));
        assert_eq!(parsed("ann@exa_mple.org"), Err(AddressError::BadDomain));
        assert_eq!(parsed("ann@10.0.0.1"), Err(AddressError::BadDomain));
        for local in [
            "\"owner\"",
            "owner(x)",
            "own,er",
            "own;er",
            "own\\er",
            "-oProxyCommand=x",
            "=cmd|x",
            "+1",
            "owner\u{200b}",
            "\u{202e}owner",
            "\u{feff}owner",
            ".owner",
            "own..er",
            "owner.",
        ] {
            assert_eq!(
                parsed(&format!("{local}@example.net")),
                Err(AddressError::BadLocalPart),
                "{local:?}"
            );
        }
        let long_local = format!("{}@example.org", "a".repeat(65));
        assert_eq!(parsed(&long_local), Err(AddressError::BadLocalPart));
        let long = format!("a@{}.org", "b.".repeat(130));
        assert_eq!(parsed(&long), Err(AddressError::TooLong));
    }

    #[test]
    fn never_prints_itself() {
        let address = Address::parse("secret@example.org").unwrap();
        assert!(!format!("{address:?}").contains("secret"));
    }
}
