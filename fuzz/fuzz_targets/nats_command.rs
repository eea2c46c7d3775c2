//! Platform commands over NATS (`studyroom.cmd.<command>`, JSON body): the command name and
//! body parsed and checked as the command service does (`signaling::fuzzing`): errors,
//! never panics. Input: the command name up to the first NUL byte (the known names are
//! picked by a leading 0x01..0x04 byte), then the body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use signaling::fuzzing::nats_command;

const KNOWN: [&str; 4] = [
    "rooms.list",
    "room.close",
    "participant.remove",
    "track.mute",
];

fuzz_target!(|data: &[u8]| {
    let (name, body) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let command = match name {
        [k @ 1..=4, ..] => KNOWN[*k as usize - 1].to_owned(),
        _ => String::from_utf8_lossy(name).into_owned(),
    };
    let _ = nats_command(&command, body);
});
