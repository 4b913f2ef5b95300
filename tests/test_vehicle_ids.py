"""Pseudonymous vehicle ids: stable per application, different between applications."""
from hypothesis import given, strategies as st

from fleetstream.schemas.vehicle_ids import pseudonymous_id, vehicle_id

VINS = st.text(alphabet="ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=17, max_size=17)
SECRETS = st.binary(min_size=1, max_size=64)


@given(VINS, SECRETS, SECRETS)
def test_two_applications_see_different_stable_ids_for_one_car(vin, one, other):
    assert pseudonymous_id(one, vin) == pseudonymous_id(one, vin)
    if one != other:
        assert pseudonymous_id(one, vin) != pseudonymous_id(other, vin)
    assert vin not in pseudonymous_id(one, vin)


@given(VINS, VINS, SECRETS)
def test_two_cars_get_different_ids(vin, other_vin, secret):
    if vin != other_vin:
        assert pseudonymous_id(secret, vin) != pseudonymous_id(secret, other_vin)


def test_known_value_and_vin_mode():
    assert pseudonymous_id(b"key", "5YJ3E7EB0KF000001") == \
        "p-" + __import__("hmac").new(b"key", b"5YJ3E7EB0KF000001", "sha256").hexdigest()[:32]
    assert vehicle_id(None, "5YJ3E7EB0KF000001") == "5YJ3E7EB0KF000001"
