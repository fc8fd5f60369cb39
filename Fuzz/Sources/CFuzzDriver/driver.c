// The declaration is all this target provides; the definition is libFuzzer's.
#include "fuzz_driver.h"
