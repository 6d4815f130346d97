import pytest
import torch
import torchvision
from safetensors.torch import save_file

from sae_lab.models.resnet import SketchResNet

NUM_CLASSES = 7


@pytest.mark.parametrize(
    "stem_stride,maxpool,last_stride,layer,grid",
    [(2, True, 1, "layer4", 4), (2, True, 2, "layer4", 2), (1, False, 1, "layer3", 16), (2, False, 2, "layer2", 16)],
)
def test_head_of_features_is_forward(stem_stride, maxpool, last_stride, layer, grid):
    torch.manual_seed(0)
    net = SketchResNet(NUM_CLASSES, stem_stride, maxpool, last_stride, layer).eval()
    x = torch.rand(3, 1, 64, 64)
    fmap = net.features(x)
    assert fmap.shape == (3, net.channels, grid, grid)
    assert torch.allclose(net.head(fmap), net(x), atol=1e-6)
    assert net(x).shape == (3, NUM_CLASSES)


def test_head_on_layer4_is_pool_then_linear():
    net = SketchResNet(NUM_CLASSES).eval()
    fmap = torch.rand(2, 512, 4, 4)
    assert net.head_is_linear
    w, b = net.logit_weights()
    assert w.shape == (NUM_CLASSES, 512) and b.shape == (NUM_CLASSES,)
    assert w is net.classifier.weight and b is net.classifier.bias
    assert torch.allclose(net.head(fmap), fmap.mean((2, 3)) @ w.T + b, atol=1e-5)
    assert torch.allclose(net.head(fmap, pre_logits=True), fmap.mean((2, 3)), atol=1e-6)


def test_pre_logits_of_an_earlier_layer_feed_the_classifier():
    net = SketchResNet(NUM_CLASSES, layer="layer3").eval()
    fmap = net.features(torch.rand(2, 1, 64, 64))
    pooled = net.head(fmap, pre_logits=True)
    assert not net.head_is_linear and pooled.shape == (2, 512)
    assert torch.allclose(net.classifier(pooled), net.head(fmap), atol=1e-6)


def test_checkpoint_keys_keep_their_names():
    keys = SketchResNet(NUM_CLASSES, layer="layer3").state_dict()
    assert "fc.weight" in keys and "rest.0.0.conv1.weight" in keys  # classifiers trained before still load


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_rgb_weights_become_a_one_channel_stem(tmp_path, suffix):
    rgb = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / f"resnet18{suffix}"
    state = {k: v.contiguous() for k, v in rgb.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    net = SketchResNet(NUM_CLASSES, pretrained=str(path))
    assert net.stem[0].weight.shape == (64, 1, 7, 7)
    assert torch.allclose(net.stem[0].weight, rgb.conv1.weight.mean(1, keepdim=True))
    assert torch.equal(net.body[0][0].conv1.weight, rgb.layer1[0].conv1.weight)
    assert net.classifier.out_features == NUM_CLASSES  # the 1000-class head is not forced on us


def test_pretrained_file_of_another_model_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(ValueError, match="not a ResNet-18"):
        SketchResNet(NUM_CLASSES, pretrained=str(path))
    with pytest.raises(FileNotFoundError):
        SketchResNet(NUM_CLASSES, pretrained=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("kw", [{"layer": "layer5"}, {"stem_stride": 3}, {"last_stride": 4}, {"num_classes": 1}])
def test_bad_arguments_are_named(kw):
    with pytest.raises(ValueError):
        SketchResNet(**{"num_classes": NUM_CLASSES, **kw})
