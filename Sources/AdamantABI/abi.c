/* The public header is include/adamant.h; this file only makes the module a C target. */
#include "adamant.h"
