#!/usr/bin/env python3
"""librosa 0.11 reference for the `stage-audio-features` crate.

Usage: librosa_reference.py WAV OUT_JSON [--repeat N]

Computes, with librosa defaults (n_fft/frame_length 2048, hop 512,
center=True), the same features the Rust crate computes and writes them as
JSON lists of floats. Timings are included so the Rust benchmark can compare
against librosa without counting the Python/librosa import:

* ``import_s``  - time to import librosa (it loads submodules lazily, so
                  most of the real import cost lands in the first run);
* ``load_cold_s``, ``load_s`` - first and second ``librosa.load`` of the wav
                  (the first also pays lazy imports);
* ``runs_s``    - wall time of each full feature computation; the first one is
                  "cold" (numba JIT / cache load, FFT plan set-up), later ones
                  are "warm".
"""

import json
import sys
import time

t_import = time.perf_counter()
import numpy as np  # noqa: E402
import librosa  # noqa: E402

IMPORT_S = time.perf_counter() - t_import

HOP = 512
FRAME = 2048


def compute(y: np.ndarray, sr: int) -> dict:
    """All features, each with the librosa call the Rust crate mirrors."""
    rms = librosa.feature.rms(y=y, frame_length=FRAME, hop_length=HOP)[0]
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=FRAME, hop_length=HOP)[0]
    centroid = librosa.feature.spectral_centroid(y=y, sr=sr, n_fft=FRAME, hop_length=HOP)[0]
    oenv = librosa.onset.onset_strength(y=y, sr=sr, hop_length=HOP)
    # Passing the envelope is exactly what onset_detect(y=...) does internally
    # with default arguments; it just avoids computing the envelope twice.
    onset_frames = librosa.onset.onset_detect(onset_envelope=oenv, sr=sr, hop_length=HOP)
    onsets = librosa.frames_to_time(onset_frames, sr=sr, hop_length=HOP)
    intervals = librosa.effects.split(y, top_db=60, frame_length=FRAME, hop_length=HOP)
    return {
        "rms": rms,
        "zero_crossing_rate": zcr,
        "spectral_centroid": centroid,
        "onset_strength": oenv,
        "onset_frames": onset_frames,
        "onsets": onsets,
        "intervals_samples": intervals,
        "intervals": intervals / float(sr),
    }


def main() -> None:
    args = sys.argv[1:]
    repeat = 1
    if "--repeat" in args:
        i = args.index("--repeat")
        repeat = max(1, int(args[i + 1]))
        del args[i : i + 2]
    if len(args) != 2:
        sys.exit("usage: librosa_reference.py WAV OUT_JSON [--repeat N]")
    wav, out = args

    # sr=None keeps the file's rate; soundfile reads int16 as x / 32768 (float32).
    # Twice: the first call also pays librosa's lazy imports (soundfile,
    # scipy, ...), the second is the decode itself.
    load_runs = []
    for _ in range(2):
        t0 = time.perf_counter()
        y, sr = librosa.load(wav, sr=None, mono=True)
        load_runs.append(time.perf_counter() - t0)

    runs = []
    res = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = compute(y, sr)
        runs.append(time.perf_counter() - t0)

    doc = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in res.items()}
    doc.update(
        {
            "librosa_version": librosa.__version__,
            "sr": int(sr),
            "n_samples": int(y.shape[-1]),
            "import_s": IMPORT_S,
            "load_cold_s": load_runs[0],
            "load_s": load_runs[1],
            "runs_s": runs,
        }
    )
    with open(out, "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()
