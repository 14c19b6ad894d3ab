r"""Evaluation: the figures papers report (FID, KID, IS, precision/recall, bits/dim), computed the
way the reference implementations compute them, on features of any extractor.

A feature extractor is a pure, jit-able function

    extractor(images: [B, H, W, C] float in [-1, 1]) -> (features: [B, F], logits: [B, K] | None)

(the FID Inception-v3 of pytorch-fid, or the project's own digits / MNIST classifier). Metrics are
pure functions of features or of their streaming statistics.
"""
