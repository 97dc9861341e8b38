import pytest, torch
from cld_lightning.train import train

@pytest.mark.parametrize("ov", [
    ["method=infomin", "cld=on", "data=imagefolder", "data.augmentation=infomin", "backbone=resnet50", "method.instance_head=normmlp", "cld.head=normmlp", "cld.num_clusters=120", "method.queue_size=64"],
    ["method=moco", "cld=on", "data=imagefolder", "data.augmentation=mocov2", "backbone=resnet18", "method.queue_size=64"],
])
def test_x(ov, compose_train, fake_data_root):
    cfg = compose_train(*ov, f"paths.data_dir={fake_data_root}", "trainer.fast_dev_run=true", "data.image_size=64", "data.download=false")
    m = train(cfg)
    assert torch.isfinite(torch.tensor(m["train/loss_step"]))
    print(m)
