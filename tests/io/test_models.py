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


def _small_model():
    import keras

    from support import randomize_bn

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(),
                              keras.layers.Dense(2)], name="small")
    randomize_bn(model)
    return model


@pytest.mark.parametrize("saved_as,named", [("m.h5", "hdf5_named.keras"), ("m.keras", "archive_named.h5"),
                                            ("m.h5", "no_suffix"), ("m.keras", "archive.model")])
def test_a_model_is_read_by_its_content_not_its_name(tmp_path, saved_as, named):
    import numpy as np

    from bnfreeze.io.models import check_model_file, load_model

    model = _small_model()
    model.save(tmp_path / saved_as)
    path = tmp_path / named
    (tmp_path / saved_as).rename(path)
    before = path.read_bytes()
    assert check_model_file(path) == ("h5" if saved_as.endswith(".h5") else "keras")
    loaded = load_model(path)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [named]  # no link or copy left beside it


def test_content_that_is_not_a_model_is_named_for_what_it_is(tmp_path):
    import numpy as np

    from bnfreeze.io.models import check_model_file

    npz = tmp_path / "data.keras"
    with npz.open("wb") as handle:
        np.savez(handle, x=np.zeros(3))
    with pytest.raises(InputError, match="data.keras: is a NumPy .npz file"):
        check_model_file(npz)
    tflite = tmp_path / "model.keras"
    tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(32))
    with pytest.raises(InputError, match="model.keras: is a TFLite file"):
        check_model_file(tflite)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(InputError, match="notes.h5: not an HDF5 file"):
        check_model_file(text)


def test_a_load_error_names_the_users_file_not_a_temporary_link(tmp_path):
    import keras

    from bnfreeze.io.models import load_model

    @keras.saving.register_keras_serializable(package="test_content")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    model = keras.Sequential([keras.Input((2,)), Twice()])
    model.save(tmp_path / "m.keras")
    path = tmp_path / "custom.h5"  # a .keras archive named .h5: loaded through a link named .keras
    (tmp_path / "m.keras").rename(path)
    keras.saving.get_custom_objects().pop("test_content>Twice")
    with pytest.raises(InputError) as caught:
        load_model(path)
    assert str(caught.value).startswith(f"{path}: ") and "bnfreeze-load-" not in str(caught.value)
