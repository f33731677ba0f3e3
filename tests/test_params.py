import pytest

from pipeline.params import ParamsError, load_params, params_from_dict


def test_repository_params_load():
    params = load_params("params.yaml")
    assert params.data.source == "synthetic"
    assert params.train.epochs >= 1


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"trian": {"lr": 0.1}}, "unknown section(s) trian (did you mean train?)"),
        ({"train": {"lrr": 0.1}}, "unknown key(s) train.lrr (did you mean train.lr?)"),
        ({"data": {"subject_patern": "x"}}, "(did you mean data.subject_pattern?)"),
        ({"data": {"subject_patern": "x"}}, "known keys of 'data': extra_sources, root, source, "),
        ({"train": {"lr": "fast"}}, "train.lr must be a number"),
        ({"train": {"epochs": 2.5}}, "train.epochs must be an integer"),
        ({"train": {"epochs": True}}, "train.epochs must be an integer"),
        ({"train": {"epochs": 0}}, "train.epochs must be >= 1"),
        ({"train": {"lr": -1}}, "train.lr must be in (0, 10)"),
        ({"train": {"pretrained": "coco"}}, "train.pretrained must be one of"),
        ({"train": {"device": "tpu"}}, "train.device must be one of"),
        ({"landmarks": {"num_hands": 0}}, "landmarks.num_hands must be in [1, 8]"),
        ({"landmarks": {"min_hand_detection_confidence": 1.5}}, "must be in [0, 1]"),
        ({"split": {"min_box_iou": -0.1}}, "split.min_box_iou"),
        ({"finder": {"scale_min": 3.0}}, "finder.scale_min/scale_max must satisfy"),
        ({"data": {"source": "s3"}}, "data.source must be one of"),
        ({"data": {"source": "synthetic", "root": "elsewhere"}}, "must be data/synthetic"),
        (
            {
                "data": {
                    "source": "folders",
                    "root": "x",
                    "validation_fraction": 0.6,
                    "test_fraction": 0.5,
                }
            },
            "must leave images for training",
        ),
        ({"data": {"source": "folders", "root": "x", "subject_pattern": "("}}, "not a valid regex"),
        ({"synthetic": {"num_images": 1}}, "synthetic.num_images must be >= 3"),
    ],
)
def test_bad_params_are_errors_naming_the_key(raw, message):
    with pytest.raises(ParamsError) as error:
        params_from_dict(raw)
    assert message in str(error.value)


def test_int_accepted_for_float_and_converted():
    params = params_from_dict({"train": {"lr": 1}})
    assert params.train.lr == 1.0 and isinstance(params.train.lr, float)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_the_dataclass_defaults_are_params_yaml():
    """One set of defaults: a module that builds a section's dataclass without params.yaml
    gets what a user who did not touch params.yaml gets."""
    import dataclasses

    import yaml

    from pipeline.params import SECTIONS, Params

    assert load_params("params.yaml") == Params()
    # and params.yaml spells every key out: DVC tracks a stage's params by the keys in the file
    raw = yaml.safe_load(open("params.yaml"))
    for name, section in SECTIONS.items():
        assert set(raw[name]) == {f.name for f in dataclasses.fields(section)}, name


def test_the_finder_trains_with_its_own_zoom_and_the_rest_of_the_train_recipe():
    from pipeline.params import FinderParams, TrainParams, finder_params_for

    train = TrainParams(scale_min=0.8, scale_max=1.25, rotate_deg=10.0)
    derived = finder_params_for(FinderParams(scale_min=0.4, scale_max=3.0), train)
    assert (derived.scale_min, derived.scale_max) == (0.4, 3.0)
    assert derived.rotate_deg == 10.0 and derived.translate == train.translate
