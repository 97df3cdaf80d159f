"""The papers' figures, one module each: ``python -m wtfree.experiments.NAME --out DIR [--quick]``.

An interrupted experiment started again with the same command trains only the parts it had not finished.

- `lillicrap_linear`: Lillicrap et al. 2016 Fig. 2a-b, linear 30-20-10 net.
- `liao_sign`: Liao et al. 2016 on all of MNIST, sign-concordant rules x BatchNorm x Batch Manhattan, and the
  p sweep, each cell at its own learning rate chosen on validation.
- `akrout_angles`: Akrout et al. 2019 Fig. 4, weight and delta angles of fa, usf, wm, kp in a ResNet.
- `lillicrap_mnist`: Lillicrap et al. 2016 Fig. 3a-b, 784-1000-10 sigmoid net on all of MNIST, bp's settings
  chosen on validation; fa, fa with 50 % of W and of B removed (independent masks), shallow.
- `fa_conv`: Lillicrap et al. 2016 Fig. 3b's angle claim asked of every hidden layer of a LeNet on all of MNIST.
- `lillicrap_depth`: Lillicrap et al. 2016 Fig. 3c-d, shallow vs deep tanh students of a tanh teacher.
- `akrout_fc`: Akrout et al. 2019's reference code, a 784-500-10 sigmoid net on all of MNIST under bp, fa, wm, kp.
- `transformers`: a ViT on real MNIST digits and a character LM under every family of rules.
"""
