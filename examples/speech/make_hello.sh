#!/bin/sh
# Makes examples/speech/hello.wav: a few seconds of synthetic speech, 16 kHz mono 16-bit.
# Voice: Debian `flite` with its built-in cmu_us_slt voice (CMU/BSD-style license, see LICENSE here).
# Needs: apt-get install flite ffmpeg
set -eu
cd "$(dirname "$0")"
TEXT="Hello! This is realtalk bridge. It turns speech into facial expressions, in real time."
flite -voice slt -t "$TEXT" -o /tmp/hello_slt_raw.wav
# flite's slt voice writes 16 kHz already; ffmpeg normalises format and strips metadata for a reproducible file
ffmpeg -loglevel error -y -i /tmp/hello_slt_raw.wav -ac 1 -ar 16000 -c:a pcm_s16le -map_metadata -1 -fflags +bitexact -flags:a +bitexact hello.wav
rm -f /tmp/hello_slt_raw.wav
