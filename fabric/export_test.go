package fabric

// InstanceID exposes instanceID to the tests of package fabric_test.
var InstanceID = instanceID
