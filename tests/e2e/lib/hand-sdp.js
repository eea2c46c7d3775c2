// Hand-written SDP for the signaling tests that publish and subscribe without a browser:
// a publisher offer shaped like Chromium's and the receive-only answer a browser's subscriber
// PC would give to a server offer.
// Why by hand: the server must negotiate what browsers send; no media ever flows from these.

/** m-sections of an SDP as arrays of lines (the session part is dropped). */
export const sections = (sdp) => sdp.split(/\r?\n(?=m=)/).slice(1).map((m) => m.split(/\r?\n/).filter(Boolean));

/** A receive-only answer to a server offer, as a browser's subscriber PC would make it. */
export function answerFor(offer) {
  const bundle = offer.match(/^a=group:BUNDLE .*$/m);
  const out = ['v=0', 'o=- 7 2 IN IP4 127.0.0.1', 's=-', 't=0 0', ...(bundle ? [bundle[0]] : [])];
  const fp = Array.from({ length: 32 }, (_, i) => ((i * 53 + 7) & 0xff).toString(16).padStart(2, '0').toUpperCase()).join(':');
  for (const lines of sections(offer)) {
    const dir = lines.find((l) => /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(l));
    out.push(lines[0], 'c=IN IP4 0.0.0.0', 'a=ice-ufrag:e2eS', 'a=ice-pwd:e2eSubscriberPassword01234',
      `a=fingerprint:sha-256 ${fp}`, 'a=setup:active', ...lines.filter((l) => l.startsWith('a=mid:')),
      ...lines.filter((l) => /^a=(rtpmap|fmtp|rtcp-fb|extmap|sctp-port|max-message-size):|^a=rtcp-rsize$/.test(l)));
    if (!lines[0].startsWith('m=application')) {
      out.push(dir === 'a=sendonly' || dir === 'a=sendrecv' ? 'a=recvonly' : 'a=inactive', 'a=rtcp-mux');
    }
  }
  return out.join('\r\n') + '\r\n';
}

/**
 * A hand-written publisher offer shaped like Chromium's: mid 0 = opus audio, mid 1 = video
 * (`video`: VP8, or H264 constrained baseline) with RTX and the `videoFb` rtcp-fb lines,
 * both sendonly, BUNDLEd, DTLS actpass. Enough for the server to negotiate an answer; no
 * media ever flows from it. Renegotiations need a higher `version`.
 */
export function handOffer({ version = 2, video = 'VP8', videoFb = ['goog-remb', 'transport-cc', 'ccm fir', 'nack', 'nack pli'] } = {}) {
  const fp = Array.from({ length: 32 }, (_, i) => ((i * 37 + 11) & 0xff).toString(16).padStart(2, '0').toUpperCase()).join(':');
  const common = (mid) => [
    'c=IN IP4 0.0.0.0', 'a=rtcp:9 IN IP4 0.0.0.0',
    'a=ice-ufrag:e2eU', 'a=ice-pwd:e2eTestIcePassword0123456', 'a=ice-options:trickle',
    `a=fingerprint:sha-256 ${fp}`, 'a=setup:actpass', `a=mid:${mid}`,
    'a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid', 'a=sendonly', 'a=rtcp-mux',
  ];
  const [vpt, rtx] = video === 'H264' ? [102, 103] : [96, 97];
  const rtpmap = video === 'H264'
    ? [`a=rtpmap:${vpt} H264/90000`, `a=fmtp:${vpt} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f`]
    : [`a=rtpmap:${vpt} VP8/90000`];
  return [
    'v=0', `o=- 4611731400430051336 ${version} IN IP4 127.0.0.1`, 's=-', 't=0 0',
    'a=group:BUNDLE 0 1', 'a=extmap-allow-mixed', 'a=msid-semantic: WMS e2e',
    'm=audio 9 UDP/TLS/RTP/SAVPF 111', ...common(0),
    'a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level', 'a=msid:e2e e2e-audio',
    'a=rtpmap:111 opus/48000/2', 'a=rtcp-fb:111 transport-cc', 'a=fmtp:111 minptime=10;useinbandfec=1',
    'a=ssrc:1001 cname:e2e', 'a=ssrc:1001 msid:e2e e2e-audio',
    `m=video 9 UDP/TLS/RTP/SAVPF ${vpt} ${rtx}`, ...common(1), 'a=rtcp-rsize', 'a=msid:e2e e2e-video',
    ...rtpmap, ...videoFb.map((fb) => `a=rtcp-fb:${vpt} ${fb}`),
    `a=rtpmap:${rtx} rtx/90000`, `a=fmtp:${rtx} apt=${vpt}`,
    'a=ssrc-group:FID 2001 2002', 'a=ssrc:2001 cname:e2e', 'a=ssrc:2001 msid:e2e e2e-video',
    'a=ssrc:2002 cname:e2e', 'a=ssrc:2002 msid:e2e e2e-video',
    '',
  ].join('\r\n');
}
export const HAND_TRACKS = [{ mid: '0', source: 'microphone' }, { mid: '1', source: 'camera' }];
