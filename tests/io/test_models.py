import pytest

from bnfreeze.errors import InputError
from bnfreeze.io.files import atomic_path, write_json


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target, force=False) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, force=True) as tmp:
            tmp.write_text("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_refuses_existing_without_force(tmp_path):
    target = tmp_path / "x.json"
    write_json({"a": 1}, target)
    with pytest.raises(InputError, match="--force"):
        write_json({"a": 2}, target)
    write_json({"a": 2}, target, force=True)
    assert '"a": 2' in target.read_text()


def test_missing_output_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_json({}, tmp_path / "nowhere" / "x.json")


def test_a_file_output_never_replaces_a_folder(tmp_path):
    # `verify --json .` or `fold --report <project folder> --force` deleted the folder and all it held
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "model.keras").write_text("precious")
    for force in (False, True):
        with pytest.raises(InputError, match="is a folder"):
            write_json({}, folder, force=force)
    assert (folder / "model.keras").read_text() == "precious"


def test_a_folder_output_replaces_only_a_folder_bnfreeze_wrote(tmp_path):
    # a folder output replaces whole what is there: only a folder bnfreeze wrote, holding only what it wrote
    folder = tmp_path / "not_a_savedmodel"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    theirs = tmp_path / "their_sm"  # a SavedModel written by someone else (tf.saved_model.save, say)
    theirs.mkdir()
    (theirs / "saved_model.pb").write_text("theirs")
    for other in (folder, theirs):
        with pytest.raises(InputError, match="a folder bnfreeze did not write"):
            with atomic_path(other, force=True, folder=True) as tmp:
                tmp.mkdir()
    assert (folder / "notes.txt").read_text() == "precious" and (theirs / "saved_model.pb").read_text() == "theirs"
    saved = tmp_path / "sm"
    for content in ("old", "new"):
        with atomic_path(saved, force=True, folder=True) as tmp:
            tmp.mkdir()
            (tmp / "saved_model.pb").write_text(content)
            (tmp / "variables").mkdir()
            (tmp / "variables" / "v.index").write_text(content)
        assert (saved / "saved_model.pb").read_text() == content
    # a file of its own put into bnfreeze's folder afterwards makes it someone else's
    (saved / "variables" / "mine.txt").write_text("precious")
    with pytest.raises(InputError, match=r"holds files bnfreeze did not write \(variables/mine.txt\)"):
        with atomic_path(saved, force=True, folder=True) as tmp:
            tmp.mkdir()
    assert (saved / "variables" / "mine.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_savedmodel", "sm", "their_sm"]


@pytest.mark.parametrize("name,kind", [("m.onnx", "an ONNX file"), ("m.tflite", "a TFLite file"),
                                       ("sm", "a SavedModel")])
def test_an_artifact_given_as_the_model_says_what_to_give(tmp_path, name, kind):
    from bnfreeze.io.models import load_model

    path = tmp_path / name
    if name == "sm":
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"")
    else:
        path.write_bytes(b"not read")
    with pytest.raises(InputError, match=f"{name}: is {kind}; this command needs the Keras model .* bnfreeze verify"):
        load_model(path)


def test_a_loaded_model_is_named_by_its_file_in_messages(tmp_path):
    import keras

    from bnfreeze.io.models import load_model, model_label

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="built_here")
    assert model_label(model) == "built_here"
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    assert model_label(loaded) == str(path)
    assert model_label(model) == "built_here"  # the model saved is not the one loaded
