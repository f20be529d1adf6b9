"""scratch: conformance on new adapters"""
from bridge.testing import conformance_test
from bridge_llama import (ApertusAdapter, Ernie4_5Adapter, Exaone4Adapter, HunYuanDenseV1Adapter, HunYuanMoEV1Adapter,
    NemotronAdapter, PersimmonAdapter, SeedOssAdapter)
NEW = (ApertusAdapter, Ernie4_5Adapter, SeedOssAdapter, NemotronAdapter, Exaone4Adapter, PersimmonAdapter,
       HunYuanDenseV1Adapter, HunYuanMoEV1Adapter)
test_conformance = conformance_test(NEW)
