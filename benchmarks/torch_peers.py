"""Plain PyTorch versions of the step-time models, timed beside wtfree's.

Same layers, shapes, batch and optimizer as a `step_time.Bench` (SGD,
momentum 0.9, weight decay 1e-4; BatchNorm in training mode), built with
``torch.nn`` and trained with ``torch.optim.SGD``: what a researcher would
write in PyTorch. Needs PyTorch (``pip install -e '.[peers]'``);
`available` says whether it imports.
"""

import importlib.util
import math


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


_ACTIVATIONS = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh"}
# The registry's ResNets that have a twin: (stage sizes, stem filters, ImageNet stem).
_RESNETS = {"resnet18": ((2, 2, 2, 2), 64, True), "resnet20": ((3, 3, 3), 16, False),
            "resnet_tiny": ((1, 1), 8, False)}


def has_twin(bench) -> bool:
  """Whether `make_model` builds ``bench``'s model: plain MLPs and the ResNets above, in float32."""
  if bench.dtype != "float32":
    return False
  if bench.model == "mlp":
    return set(bench.options) <= {"widths", "activation"} and bench.options.get("activation", "relu") in _ACTIVATIONS
  return bench.model in _RESNETS and not bench.options


def make_model(bench):
  """The PyTorch twin of a `step_time.Bench`'s model (see `has_twin`)."""
  from torch import nn  # pylint: disable=g-import-not-at-top

  if not has_twin(bench):
    raise ValueError(f"no PyTorch twin of {bench.describe()}")
  if bench.model == "mlp":
    layers, width = [], math.prod(bench.input_shape)
    for hidden in bench.options.get("widths", (256,)):
      layers += [nn.Linear(width, hidden), getattr(nn, _ACTIVATIONS[bench.options.get("activation", "relu")])()]
      width = hidden
    return nn.Sequential(*layers, nn.Linear(width, bench.num_classes))
  return _resnet(*_RESNETS[bench.model], bench.num_classes)


class Step:
  """One PyTorch training step of a bench's model on a fixed random batch."""

  def __init__(self, bench, seed: int = 0):
    import torch  # pylint: disable=g-import-not-at-top

    torch.manual_seed(seed)
    self.name = self.framework = "pytorch"
    self.model = make_model(bench).train()
    shape = bench.input_shape
    # Images as PyTorch takes them: channels first.
    shape = (bench.batch, shape[-1], *shape[:-1]) if len(shape) == 3 else (bench.batch, *shape)
    self.inputs = torch.randn(shape)
    self.labels = torch.arange(bench.batch) % bench.num_classes
    self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    self.loss = torch.nn.CrossEntropyLoss()
    self.compile_s = 0.0
    self.costs = {}

  def step(self) -> None:
    """One forward, backward and SGD update."""
    self.optimizer.zero_grad(set_to_none=True)
    self.loss(self.model(self.inputs), self.labels).backward()
    self.optimizer.step()


def version() -> str:
  """PyTorch's version and thread count."""
  import torch  # pylint: disable=g-import-not-at-top

  return f"{torch.__version__}, {torch.get_num_threads()} threads"
