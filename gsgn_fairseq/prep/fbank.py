"""The FBank view: 80-dim Kaldi fbank of 16 kHz audio, as fairseq's MuST-C preparation."""
import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi

from ..data.mustc import SAMPLE_RATE

N_MEL_BINS = 80
WINDOW = 400  # samples in one 25 ms Kaldi window: shorter audio has no frame


def extract_fbank(waveform, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """80-dim Kaldi fbank of the waveform scaled by 2^15: float32 (n_frames, 80).

    ``waveform``: mono float samples in [-1, 1], shape (n,) or (1, n). Audio shorter than one
    25 ms window gives (0, 80).
    """
    w = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).reshape(1, -1)  # 1 x n
    if w.shape[1] < WINDOW:
        return np.zeros((0, N_MEL_BINS), dtype=np.float32)
    return kaldi.fbank(w * 2**15, num_mel_bins=N_MEL_BINS, sample_frequency=sample_rate).numpy()
