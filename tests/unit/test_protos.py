"""The committed generated code must be exactly what `python -m server.codegen` makes from the .proto."""

from __future__ import annotations

from server.codegen import GENERATED, PROTO_ROOT, generate


def test_generated_code_is_in_step_with_the_proto(tmp_path):
    written = generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(GENERATED)
    stale = [p.name for p in written if p.read_bytes() != (PROTO_ROOT / "digits" / "v1" / p.name).read_bytes()]
    assert not stale, f"{stale} differ from protos/digits/v1/digits.proto: run `python -m server.codegen`"


def test_contract_names_and_numbers_are_fixed():
    from digits.v1 import digits_pb2

    req = digits_pb2.PredictRequest.DESCRIPTOR
    assert {f.name: f.number for f in req.fields} == {"image": 1, "pixels": 2}
    assert [f.name for f in req.oneofs_by_name["input"].fields] == ["image", "pixels"]
    resp = digits_pb2.PredictResponse.DESCRIPTOR
    assert {f.name: f.number for f in resp.fields} == {
        "digit": 1, "confidence": 2, "probabilities": 3, "model_version": 4, "pixels": 5
    }  # fmt: skip
    service = digits_pb2.DESCRIPTOR.services_by_name["DigitClassifier"]
    assert service.full_name == "digits.v1.DigitClassifier"
    assert service.methods_by_name["Predict"].input_type is req
