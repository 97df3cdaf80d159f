"""Plain PyTorch versions of the step-time models, timed beside wtfree's.

Same layers, shapes, batch and optimizer as `step_time.BENCHES` (SGD,
momentum 0.9, weight decay 1e-4; BatchNorm in training mode), built with
``torch.nn`` and trained with ``torch.optim.SGD``: what a researcher would
write in PyTorch. Needs PyTorch, which no extra of the project installs
yet (``pip install torch``); `available` says whether it imports.
"""

import importlib.util
import time


def available() -> bool:
  """Whether PyTorch can be imported."""
  return importlib.util.find_spec("torch") is not None


def _resnet(stage_sizes, num_filters, imagenet_stem, num_classes):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  class Block(nn.Module):

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(cout)
      self.proj = None
      if stride != 1 or cin != cout:
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return torch.relu((x if self.proj is None else self.proj(x)) + y)

  if imagenet_stem:
    stem = [nn.Conv2d(3, num_filters, 7, 2, 3, bias=False), nn.BatchNorm2d(num_filters), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1)]
  else:
    stem = [nn.Conv2d(3, num_filters, 3, 1, 1, bias=False), nn.BatchNorm2d(num_filters), nn.ReLU()]
  layers, cin = list(stem), num_filters
  for i, blocks in enumerate(stage_sizes):
    cout = num_filters * 2**i
    for j in range(blocks):
      layers.append(Block(cin, cout, 2 if i > 0 and j == 0 else 1))
      cin = cout
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
  return nn.Sequential(*layers)


def make_model(name: str, num_classes: int):
  """The PyTorch twin of a `step_time.BENCHES` model: 'mlp', 'resnet18' or 'resnet20'."""
  from torch import nn  # pylint: disable=g-import-not-at-top

  if name == "mlp":
    return nn.Sequential(nn.Linear(784, 1000), nn.Sigmoid(), nn.Linear(1000, num_classes))
  if name == "resnet18":
    return _resnet((2, 2, 2, 2), 64, True, num_classes)
  if name == "resnet20":
    return _resnet((3, 3, 3), 16, False, num_classes)
  raise ValueError(f"no PyTorch twin of model {name!r}; there are mlp, resnet18 and resnet20")


class Step:
  """One PyTorch training step of a model on a fixed random batch, timed like `step_time.Timed`."""

  def __init__(self, name: str, input_shape: tuple[int, ...], batch: int, num_classes: int, seed: int = 0):
    import torch  # pylint: disable=g-import-not-at-top

    torch.manual_seed(seed)
    self.name = "pytorch"
    self.model = make_model(name, num_classes).train()
    # Images as PyTorch takes them: channels first.
    shape = (batch, input_shape[-1], *input_shape[:-1]) if len(input_shape) == 3 else (batch, *input_shape)
    self.inputs = torch.randn(shape)
    self.labels = torch.arange(batch) % num_classes
    self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    self.loss = torch.nn.CrossEntropyLoss()
    self.compile_s = 0.0
    self.costs = {}

  def step(self) -> None:
    """One forward, backward and SGD update."""
    self.optimizer.zero_grad(set_to_none=True)
    self.loss(self.model(self.inputs), self.labels).backward()
    self.optimizer.step()

  def time_steps(self, n: int) -> float:
    """Seconds per step over ``n`` steps."""
    start = time.perf_counter()
    for _ in range(n):
      self.step()
    return (time.perf_counter() - start) / n
