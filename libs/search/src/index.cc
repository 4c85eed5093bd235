#include "medgrid/search/index.h"
