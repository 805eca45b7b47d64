import os

RATES = {"A": 1.0, "B": 2.0}


def price(weight, express: bool = False, zone: str = "A"):
    if weight <= 0:
        raise ValueError(f"weight must be positive, got {weight}")
    if zone not in RATES:
        raise KeyError(f"no zone {zone}")
    print(f"pricing {weight} in {zone}")
    total = RATES[zone] * weight * (2 if express else 1)
    return {
        "total": total,
        "weight_type": type(weight).__name__,
        "zone": zone,
        "currency": os.environ.get("PARCEL_CURRENCY"),
        "factor": os.environ.get("PARCEL_FACTOR"),
    }
