// A small Y4M file for Chromium's fake camera (--use-file-for-fake-video-capture).
// Why: tests with five pages that each encode one camera and decode four run on two shared
// cores; Chromium's built-in fake camera (640x480, 20 fps) makes the encoders and decoders
// the bottleneck and starved pages show freezes that are not the server's. A 320x240 15 fps
// loop with a moving bar keeps every page cheap while the encoder still has work each frame.
import { writeFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Writes (once per process) a WxH Y4M loop of `frames` frames at `fps` and returns its path.
 */
export async function smallCameraFile({ width = 320, height = 240, fps = 15, frames = 30 } = {}) {
  const dir = path.join(os.tmpdir(), 'studyroom-e2e');
  const file = path.join(dir, `cam-${width}x${height}-${fps}-${frames}.y4m`);
  if (existsSync(file)) return file;
  await mkdir(dir, { recursive: true });
  const ySize = width * height;
  const cSize = (width / 2) * (height / 2);
  const parts = [Buffer.from(`YUV4MPEG2 W${width} H${height} F${fps}:1 Ip A1:1 C420jpeg\n`)];
  for (let f = 0; f < frames; f++) {
    const y = Buffer.alloc(ySize);
    const bar = Math.floor((f / frames) * width);
    for (let row = 0; row < height; row++) {
      for (let col = 0; col < width; col++) {
        // A gradient, a moving bright bar and a little per-frame texture.
        let v = 40 + ((col + row) >> 2) % 120 + ((col * 7 + row * 13 + f * 31) % 17);
        if (Math.abs(col - bar) < 12) v = 235;
        y[row * width + col] = v;
      }
    }
    const u = Buffer.alloc(cSize, 128 + ((f * 3) % 40) - 20);
    const v = Buffer.alloc(cSize, 128);
    parts.push(Buffer.from('FRAME\n'), y, u, v);
  }
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, Buffer.concat(parts));
  const { rename } = await import('node:fs/promises');
  await rename(tmp, file);
  return file;
}

/** Chromium flags that make the fake camera play `file`. */
export function fakeCameraArgs(file) {
  return [`--use-file-for-fake-video-capture=${file}`];
}
