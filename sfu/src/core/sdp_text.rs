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
//!
//! Two edits of the publisher answer's audio follow the offer instead of our configuration
//! (the only ones that add or reorder rather than remove, each within what the offer said):
//!
//! - [`answer_red_order_as_offered`]: str0m puts a negotiated RED before its primary, and
//!   libwebrtc sends RED exactly when it comes first in the answer. Every Chrome offer lists
//!   `red` (after Opus unless the page preferred it with `setCodecPreferences`); answering
//!   in the offer's order leaves the choice to the publisher instead of doubling every
//!   learner's audio bitrate.
//! - [`answer_dtx_as_offered`]: `usedtx=1` is a receiver's wish that its peer send DTX
//!   (RFC 7587 §6.1). str0m's Opus configuration cannot carry it together with RED, so a
//!   client that offers it (the SDK does when asked) gets it mirrored in our answer, and
//!   its browser then stops sending during silence.

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

/// Payload types of a section's `m=` line, in order.
fn formats<'a>(s: &'a Section) -> Vec<&'a str> {
    s.lines[0].split(' ').skip(3).collect()
}

fn is_red(enc: Option<&String>) -> bool {
    enc.is_some_and(|e| e.starts_with("red/"))
}

/// `answer` with each `red` payload type placed after its primary when the offer's m-line
/// (same mid) listed that codec before `red`; otherwise unchanged (see the module docs).
pub(super) fn answer_red_order_as_offered(offer: &str, answer: &str) -> String {
    let (_, offered) = split(offer);
    let (session, mut sections) = split(answer);
    for s in &mut sections {
        let Some(o) = offered.iter().find(|o| o.mid.is_some() && o.mid == s.mid) else {
            continue;
        };
        let (ours, theirs) = (rtpmaps(s), rtpmaps(o));
        let their_order = formats(o);
        let pos = |want: &dyn Fn(Option<&String>) -> bool| {
            their_order.iter().position(|f| want(theirs.get(*f)))
        };
        let mut fmts: Vec<String> = formats(s).into_iter().map(String::from).collect();
        let mut changed = false;
        for i in 0..fmts.len().saturating_sub(1) {
            if !is_red(ours.get(&fmts[i])) {
                continue;
            }
            let Some(primary) = ours.get(&fmts[i + 1]).cloned() else {
                continue;
            };
            let red_at = pos(&|e| is_red(e));
            let primary_at = pos(&|e| e == Some(&primary));
            if let (Some(r), Some(p)) = (red_at, primary_at)
                && p < r
            {
                fmts.swap(i, i + 1);
                changed = true;
            }
        }
        if changed {
            let head: Vec<&str> = s.lines[0].split(' ').take(3).collect();
            s.lines[0] = Cow::Owned(format!("{} {}", head.join(" "), fmts.join(" ")));
        }
    }
    join(&session, &sections)
}

/// `answer` with `usedtx=1` on each Opus payload type whose m-line in the offer (same mid)
/// asked for it on Opus (see the module docs).
pub(super) fn answer_dtx_as_offered(offer: &str, answer: &str) -> String {
    let (_, offered) = split(offer);
    let (session, mut sections) = split(answer);
    let dtx_value = |v: &str| {
        v.split(';')
            .any(|kv| kv.trim().eq_ignore_ascii_case("usedtx=1"))
    };
    for s in &mut sections {
        let Some(o) = offered.iter().find(|o| o.mid.is_some() && o.mid == s.mid) else {
            continue;
        };
        let theirs = rtpmaps(o);
        let asked = o
            .lines
            .iter()
            .filter_map(|l| pt_attr(l, "fmtp"))
            .any(|(pt, v)| theirs.get(pt).is_some_and(|e| e.starts_with("opus/")) && dtx_value(v));
        if !asked {
            continue;
        }
        let ours = rtpmaps(s);
        let opus: Vec<String> = ours
            .iter()
            .filter(|(_, e)| e.starts_with("opus/"))
            .map(|(pt, _)| pt.clone())
            .collect();
        for pt in opus {
            let fmtp = s
                .lines
                .iter()
                .position(|l| pt_attr(l, "fmtp").is_some_and(|(p, _)| p == pt));
            match fmtp {
                Some(i) => {
                    let (_, v) = pt_attr(&s.lines[i], "fmtp").expect("found above");
                    if !dtx_value(v) {
                        let line = if v.is_empty() {
                            format!("a=fmtp:{pt} usedtx=1")
                        } else {
                            format!("a=fmtp:{pt} {v};usedtx=1")
                        };
                        s.lines[i] = Cow::Owned(line);
                    }
                }
                None => {
                    let at = s
                        .lines
                        .iter()
                        .position(|l| pt_attr(l, "rtpmap").is_some_and(|(p, _)| p == pt))
                        .map_or(s.lines.len(), |i| i + 1);
                    s.lines
                        .insert(at, Cow::Owned(format!("a=fmtp:{pt} usedtx=1")));
                }
            }
        }
    }
    join(&session, &sections)
}

/// The mids of `sdp` whose m-line lists the codec `name` (`a=rtpmap` encoding name, any
/// case): which of a subscriber's m-lines accepted `red`, for instance.
pub(super) fn mids_with_codec(sdp: &str, name: &str) -> Vec<String> {
    let (_, sections) = split(sdp);
    sections
        .iter()
        .filter(|s| {
            let fmts = formats(s);
            rtpmaps(s).iter().any(|(pt, enc)| {
                fmts.contains(&pt.as_str())
                    && enc.split('/').next() == Some(name.to_ascii_lowercase().as_str())
            })
        })
        .filter_map(|s| s.mid.map(String::from))
        .collect()
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

    const RED_FIRST: &str = "v=0\r\ns=-\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\na=mid:0\r\na=rtpmap:63 red/48000/2\r\n\
        a=fmtp:63 111/111\r\na=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1\r\n";

    #[test]
    fn red_follows_the_offers_order() {
        // Chrome's default: Opus first, then RED. str0m answers RED first.
        let offer = RED_FIRST.replace("SAVPF 63 111", "SAVPF 111 63");
        let out = answer_red_order_as_offered(&offer, RED_FIRST);
        assert!(
            out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n"),
            "{out}"
        );
        // RED preferred by the page (setCodecPreferences): kept first.
        let out = answer_red_order_as_offered(RED_FIRST, RED_FIRST);
        assert!(
            out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\n"),
            "{out}"
        );
        // No RED in the answer: nothing moves.
        assert_eq!(answer_red_order_as_offered(&offer, OFFER), OFFER);
    }

    #[test]
    fn dtx_mirrored_only_when_offered() {
        let answer = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";
        let out = answer_dtx_as_offered(RED_FIRST, answer);
        assert!(
            out.contains("a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1\r\n"),
            "{out}"
        );
        // Not asked: unchanged.
        let plain = RED_FIRST.replace(";usedtx=1", "");
        assert_eq!(answer_dtx_as_offered(&plain, answer), answer);
        // Asked, and the answer has no fmtp for Opus: one is added after the rtpmap.
        let bare = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            a=rtpmap:111 opus/48000/2\r\n";
        let out = answer_dtx_as_offered(RED_FIRST, bare);
        assert!(
            out.ends_with("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 usedtx=1\r\n"),
            "{out}"
        );
    }

    #[test]
    fn finds_the_mids_that_accepted_a_codec() {
        assert_eq!(mids_with_codec(RED_FIRST, "RED"), ["0"]);
        assert!(mids_with_codec(OFFER, "red").is_empty());
        // An rtpmap whose payload type the m= line no longer lists does not count.
        let dropped = RED_FIRST.replace("SAVPF 63 111", "SAVPF 111");
        assert!(mids_with_codec(&dropped, "red").is_empty());
    }
}
