"""The papers' figures, one module each: ``python -m wtfree.experiments.NAME --out DIR [--quick]``.

- `lillicrap_linear`: Lillicrap et al. 2016 Fig. 2a-b, linear 30-20-10 net.
- `liao_sign`: Liao et al. 2016, sign-concordant rules x BatchNorm x Batch Manhattan, and the p sweep.
- `akrout_angles`: Akrout et al. 2019 Fig. 4, weight and delta angles of fa, usf, wm, kp in a ResNet.
- `lillicrap_mnist`: Lillicrap et al. 2016 Fig. 2c-d, 1000-unit sigmoid net, fa with 50 % sparse W and B.
- `lillicrap_depth`: Lillicrap et al. 2016 Fig. 3, shallow vs deep tanh students of a tanh teacher.
- `transformers`: a ViT on real MNIST digits and a character LM under every family of rules.
"""
