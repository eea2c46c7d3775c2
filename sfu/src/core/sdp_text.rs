//! SDP text narrowed where str0m 0.25 says more than the negotiation allows. Both edits only
//! *remove* lines (or payload types from an `m=` line); nothing is added or rewritten, so the
//! result is always a valid SDP that str0m's own state still covers.
//!
//! - [`answer_feedback_within_offer`]: str0m writes each codec's `a=rtcp-fb` lines from our
//!   codec configuration (only `transport-cc` is intersected with the remote's), so an
//!   answer to an offer listing only `nack pli` also says `nack`. An answer must not add
//!   feedback the offer did not list (RFC 3264 §6.1, RFC 8829 §5.3.1, RFC 4585 §4.2):
//!   answer with the intersection.
//! - [`offer_only_payload_types`]: str0m's codec configuration is fixed when the `Rtc` is
//!   built and a new m-line offers every codec of its kind; a subscriber m-line should offer
//!   only what its producer sends (see `negotiate.rs`).

use std::borrow::Cow;
use std::collections::HashMap;

/// One m-section of an SDP: its lines (the `m=` line first) and its `a=mid`.
struct Section<'a> {
    lines: Vec<Cow<'a, str>>,
    mid: Option<&'a str>,
}

/// The session part (lines before the first `m=`) and the m-sections of `sdp`.
fn split(sdp: &str) -> (Vec<&str>, Vec<Section<'_>>) {
    let mut session = Vec::new();
    let mut sections: Vec<Section> = Vec::new();
    for line in sdp.lines() {
        if line.starts_with("m=") {
            sections.push(Section {
                lines: vec![Cow::Borrowed(line)],
                mid: None,
            });
        } else if let Some(s) = sections.last_mut() {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                s.mid = Some(mid.trim());
            }
            s.lines.push(Cow::Borrowed(line));
        } else {
            session.push(line);
        }
    }
    (session, sections)
}

fn join(session: &[&str], sections: &[Section]) -> String {
    let mut out = String::new();
    let lines = sections
        .iter()
        .flat_map(|s| s.lines.iter().map(|l| l.as_ref()));
    for l in session.iter().copied().chain(lines) {
        if !l.is_empty() {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out
}

/// `a=<attr>:<pt> <rest>` -> (pt, rest); `pt` may be `*` for rtcp-fb.
fn pt_attr<'a>(line: &'a str, attr: &str) -> Option<(&'a str, &'a str)> {
    let v = line
        .strip_prefix("a=")?
        .strip_prefix(attr)?
        .strip_prefix(':')?;
    let (pt, rest) = v.split_once(' ').unwrap_or((v, ""));
    Some((pt, rest.trim()))
}

/// A section's codecs: payload type -> lower-case `name/clock[/channels]` from `a=rtpmap`.
fn rtpmaps(s: &Section) -> HashMap<String, String> {
    s.lines
        .iter()
        .filter_map(|l| pt_attr(l, "rtpmap"))
        .map(|(pt, enc)| (pt.to_string(), enc.to_ascii_lowercase()))
        .collect()
}

/// Feedback values listed for `pt` (and for `*`) in a section, whitespace-normalised.
fn feedback(s: &Section, pt: &str) -> Vec<String> {
    s.lines
        .iter()
        .filter_map(|l| pt_attr(l, "rtcp-fb"))
        .filter(|(p, _)| *p == pt || *p == "*")
        .map(|(_, v)| normalise(v))
        .collect()
}

fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `answer` with every `a=rtcp-fb` line removed that the offer's m-line of the same mid did
/// not list for the same codec. The codec is matched by payload type when the offer has the
/// answer's payload type with the same `rtpmap`; otherwise (a payload type remapped by the
/// answerer) by `rtpmap`, keeping only feedback that every offered payload type of that
/// codec lists. A section without a counterpart in the offer loses all its feedback.
pub(super) fn answer_feedback_within_offer(offer: &str, answer: &str) -> String {
    let (_, offered) = split(offer);
    let (session, mut sections) = split(answer);
    for s in &mut sections {
        let Some(o) = offered.iter().find(|o| o.mid.is_some() && o.mid == s.mid) else {
            s.lines.retain(|l| pt_attr(l, "rtcp-fb").is_none());
            continue;
        };
        let ours = rtpmaps(s);
        let theirs = rtpmaps(o);
        let allowed = |pt: &str, value: &str| -> bool {
            let value = normalise(value);
            if pt == "*" {
                return feedback(o, "*").contains(&value);
            }
            let Some(enc) = ours.get(pt) else {
                return false;
            };
            if theirs.get(pt) == Some(enc) {
                return feedback(o, pt).contains(&value);
            }
            let same: Vec<&String> = theirs
                .iter()
                .filter(|(_, e)| *e == enc)
                .map(|(p, _)| p)
                .collect();
            !same.is_empty() && same.iter().all(|p| feedback(o, p).contains(&value))
        };
        s.lines.retain(|l| match pt_attr(l, "rtcp-fb") {
            Some((pt, value)) => allowed(pt, value),
            None => true,
        });
    }
    join(&session, &sections)
}

/// `offer` with the m-lines named in `keep` (mid -> payload types) narrowed to those payload
/// types: the `m=` line's format list and the `a=rtpmap`/`a=fmtp`/`a=rtcp-fb` lines of the
/// others are removed. A section that would be left without any payload type is not touched.
pub(super) fn offer_only_payload_types(offer: &str, keep: &HashMap<String, Vec<u8>>) -> String {
    let (session, mut sections) = split(offer);
    for s in &mut sections {
        let Some(pts) = s.mid.and_then(|m| keep.get(m)) else {
            continue;
        };
        let keep_pt = |p: &str| p.parse::<u8>().is_ok_and(|p| pts.contains(&p));
        let rewritten = {
            let mut m_line = s.lines[0].split(' ');
            let head: Vec<&str> = m_line.by_ref().take(3).collect();
            let formats: Vec<&str> = m_line.filter(|p| keep_pt(p)).collect();
            if head.len() < 3 || formats.is_empty() {
                continue;
            }
            format!("{} {}", head.join(" "), formats.join(" "))
        };
        s.lines[0] = Cow::Owned(rewritten);
        s.lines.retain(|l| {
            ["rtpmap", "fmtp", "rtcp-fb"]
                .iter()
                .find_map(|a| pt_attr(l, a))
                .is_none_or(|(pt, _)| pt == "*" || keep_pt(pt))
        });
    }
    join(&session, &sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\na=mid:1\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack  pli\r\n\
        a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
        a=rtpmap:102 H264/90000\r\na=rtcp-fb:* ccm fir\r\n";

    fn fb_lines(sdp: &str) -> Vec<&str> {
        sdp.lines().filter(|l| l.starts_with("a=rtcp-fb")).collect()
    }

    #[test]
    fn answer_keeps_only_offered_feedback() {
        let answer = "v=0\r\ns=-\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
            a=rtcp-fb:111 transport-cc\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n\
            a=rtcp-fb:96 transport-cc\r\na=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\n\
            a=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";
        let out = answer_feedback_within_offer(OFFER, answer);
        // `nack pli` offered (extra space ignored), `ccm fir` offered for every pt (`*`);
        // transport-cc and plain nack were not offered.
        assert_eq!(
            fb_lines(&out),
            ["a=rtcp-fb:96 ccm fir", "a=rtcp-fb:96 nack pli"]
        );
        // Nothing else changes.
        assert_eq!(
            out.lines().filter(|l| !l.starts_with("a=rtcp-fb")).count(),
            answer
                .lines()
                .filter(|l| !l.starts_with("a=rtcp-fb"))
                .count()
        );
        assert!(out.ends_with("a=fmtp:97 apt=96\r\n"));
    }

    #[test]
    fn answer_with_remapped_pt_matches_by_codec() {
        // The answer calls VP8 100: matched to the offer's 96 by rtpmap.
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 100\r\na=mid:1\r\n\
            a=rtpmap:100 vp8/90000\r\na=rtcp-fb:100 nack pli\r\na=rtcp-fb:100 goog-remb\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 100\r\na=mid:9\r\na=rtpmap:100 VP8/90000\r\n\
            a=rtcp-fb:100 nack pli\r\n";
        let out = answer_feedback_within_offer(OFFER, answer);
        // mid 9 is not in the offer: no feedback kept there.
        assert_eq!(fb_lines(&out), ["a=rtcp-fb:100 nack pli"]);
    }

    #[test]
    fn offer_narrowed_to_the_kept_payload_types() {
        let keep = HashMap::from([("1".to_string(), vec![96, 97])]);
        let out = offer_only_payload_types(OFFER, &keep);
        assert!(
            out.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"),
            "{out}"
        );
        assert!(!out.contains("H264"), "{out}");
        // The wildcard feedback applies to what is left.
        assert!(out.contains("a=rtcp-fb:* ccm fir"), "{out}");
        assert!(out.contains("a=fmtp:97 apt=96"), "{out}");
        // Sections not named are untouched.
        assert!(out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"));
        // Nothing kept: the section is left as it was rather than emptied.
        let none = HashMap::from([("1".to_string(), vec![55])]);
        assert_eq!(offer_only_payload_types(OFFER, &none), OFFER);
    }
}
