//! Identifiers the media core hands out. Numeric inside (cheap to hash and copy), with a
//! stable string form for the wire (`P12`, `TR7`) so signaling never invents its own.

use std::fmt;
use std::str::FromStr;

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                let digits = s.strip_prefix($prefix).ok_or(())?;
                if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(());
                }
                digits.parse().map($name).map_err(|_| ())
            }
        }
    };
}

numeric_id!(
    /// One participant (one signaling session) in a room; allocated by signaling.
    ParticipantId,
    "P"
);
numeric_id!(
    /// One published track (a Producer); allocated by the core, unique in the process.
    TrackId,
    "TR"
);

/// One str0m `Rtc` (one ICE/DTLS/SRTP transport) inside a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportId(pub u32);

/// What a published track carries. The browser tells us at `publish` time: SDP alone
/// cannot say whether a video m-line is a camera or a screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Camera video.
    Camera,
    /// Microphone audio.
    Microphone,
    /// Screen-share video.
    Screen,
}

impl Source {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Camera => "camera",
            Source::Microphone => "microphone",
            Source::Screen => "screen",
        }
    }

    /// Whether this source is audio.
    pub fn is_audio(self) -> bool {
        matches!(self, Source::Microphone)
    }
}

impl FromStr for Source {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "camera" => Ok(Source::Camera),
            "microphone" => Ok(Source::Microphone),
            "screen" => Ok(Source::Screen),
            _ => Err(()),
        }
    }
}

/// Which of a participant's two transports (LiveKit-style: no offer glare).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The client offers, we receive its tracks.
    Publisher,
    /// We offer, we send it everyone else's tracks.
    Subscriber,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        assert_eq!("P12".parse::<ParticipantId>(), Ok(ParticipantId(12)));
        assert_eq!(TrackId(7).to_string(), "TR7");
        assert_eq!("TR7".parse::<TrackId>(), Ok(TrackId(7)));
        for bad in [
            "",
            "P",
            "TR",
            "X1",
            "P-1",
            "P1a",
            "TR99999999999999999999999",
        ] {
            assert!(bad.parse::<TrackId>().is_err(), "{bad}");
        }
        assert!("TR1".parse::<ParticipantId>().is_err());
    }
}
