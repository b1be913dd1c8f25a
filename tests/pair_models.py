"""Model pairs for the model-pair tests, loaded through `file.py:callable` SPECs.

`torch_net` and `paddle_net` compute the same function but are written separately, the way a port
is: other attribute names, other nesting, a ReLU module called twice on one side and functional
ReLUs on the other, a functional pooling on one side and a pooling module on the other, a Linear
(weights transposed in paddle) and BatchNorm (statistics named differently). The broken variants
change one convention in a copy of a model nobody here wrote (paddle.vision's resnet18).
"""
import paddle
import paddle.nn.functional as PF
import torch
import torch.nn.functional as TF


class TorchNet(torch.nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(8)
        self.act = torch.nn.ReLU()                       # called twice
        self.block = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8))
        self.drop = torch.nn.Dropout(0.25)
        self.head = torch.nn.Linear(8 * 4 * 4, classes)

    def forward(self, x):
        x = self.act(self.norm(self.stem(x)))
        x = TF.max_pool2d(x, 2)                          # functional here, a module in paddle
        x = self.act(self.block(x) + x)
        x = TF.adaptive_avg_pool2d(x, 4)
        return self.head(self.drop(torch.flatten(x, 1)))


class PaddleNet(paddle.nn.Layer):
    def __init__(self, classes=5):
        super().__init__()
        self.features = paddle.nn.LayerList([paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.BatchNorm2D(8)])
        self.pool = paddle.nn.MaxPool2D(2)
        self.res_conv = paddle.nn.Conv2D(8, 8, 3, padding=1)
        self.res_bn = paddle.nn.BatchNorm2D(8)
        self.dropout = paddle.nn.Dropout(0.25)
        self.classifier = paddle.nn.Linear(8 * 4 * 4, classes)

    def forward(self, x):
        x = PF.relu(self.features[1](self.features[0](x)))
        x = self.pool(x)
        x = PF.relu(self.res_bn(self.res_conv(x)) + x)
        x = PF.adaptive_avg_pool2d(x, 4)
        return self.classifier(self.dropout(paddle.flatten(x, 1)))


def torch_net(classes=5):
    return TorchNet(classes)


def paddle_net(classes=5):
    return PaddleNet(classes)


def paddle_net_bn_eps():
    """A port that gave the residual BatchNorm another epsilon."""
    net = PaddleNet()
    net.res_bn._epsilon = 1e-2
    return net


def paddle_resnet18_ceil_pool():
    """paddle.vision's resnet18 with the stem's max pooling in ceil mode."""
    net = paddle.vision.models.resnet18(num_classes=10)
    net.maxpool.ceil_mode = True
    return net


def paddle_resnet18_bn_eps():
    """paddle.vision's resnet18 with one BatchNorm's epsilon changed (1e-5 -> 1e-1)."""
    net = paddle.vision.models.resnet18(num_classes=10)
    net.layer2[0].bn1._epsilon = 1e-1
    return net


def zero_head_torch():
    """A torch model whose output is zero for any input: agreement on it proves nothing."""
    net = TorchNet()
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.zeros_(net.head.bias)
    return net


def not_a_model():
    return 42


def paddle_resnet18_bn_eps_224():
    """paddle.vision's resnet18 (1000 classes) with one BatchNorm's epsilon changed (1e-5 -> 1e-1)."""
    net = paddle.vision.models.resnet18()
    net.layer2[0].bn1._epsilon = 1e-1
    return net

